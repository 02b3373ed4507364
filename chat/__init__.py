"""The school–family messaging hub."""

__version__ = "0.1.0"
