"""performer-store: personal-genome sequence stores and the Performer method."""

__version__ = "0.1.0"
