"""What every engine adapter needs, written once: error translation
(:mod:`.errors`), log files read, tailed and followed (:mod:`.files`), engine
times parsed (:mod:`.times`), the container's folders rewritten to the host's
(:mod:`.paths`) and abortable log streams (:mod:`.streams`).

The kit knows no engine: each engine package brings its own translation
function, time format options and log file paths."""
