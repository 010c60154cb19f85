"""reelay core: the domain of AI video generation runs, shared by every Lambda as a layer."""

__version__ = "0.1.0"
