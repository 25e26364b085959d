"""Format processors (plug-ins). See ``processors.base`` for the interface."""
