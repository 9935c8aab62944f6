"""sparc-ray: Ray Tune training, a versioned model registry and Ray Serve serving."""

__version__ = "0.1.0"
