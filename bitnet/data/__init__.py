"""Package data: the bundled demo model ``demo-b158-i2_s.gguf`` (see README.md here and
docs/demo-model.md). Read it with ``importlib.resources.files("bitnet.data")``."""
