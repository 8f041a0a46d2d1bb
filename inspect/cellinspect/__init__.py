"""cellinspect: a line-side vision quality-inspection station for robotic cells."""

__version__ = "0.1.0"
