"""The labels pman puts on everything it creates on an engine, so that it can
find its own jobs (the service sets them, the engines store and filter on them)."""

#: labels pman puts on everything it creates, so that it can find its own jobs
LABEL_MANAGED = "org.chrisproject.pman"
LABEL_JID = "org.chrisproject.pman.jid"
LABEL_FINGERPRINT = "org.chrisproject.pman.fingerprint"
LABEL_AUID = "org.chrisproject.pman.auid"
LABEL_TYPE = "org.chrisproject.pman.type"
LABEL_IMAGE = "org.chrisproject.pman.image"
#: which pman made it (PMAN_INSTANCE), when several share an engine
LABEL_INSTANCE = "org.chrisproject.pman.instance"
#: the compute resource (PMAN_RESOURCES) the job was given to: adoption after a
#: restart finds its resource by it
LABEL_RESOURCE = "org.chrisproject.pman.resource"
