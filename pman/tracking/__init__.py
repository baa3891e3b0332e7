"""The tracker's parts (pman.tracker puts them together): the leader lock
(``leader``), what it follows and reports (``lanes``: one lane per compute
resource), starting queued jobs (``queue``) and running jobs' logs (``logs``)."""
