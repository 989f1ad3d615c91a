"""A plugin whose descriptor module fails to import (a missing shared library, say)."""

raise ImportError("libfakegpu.so.1: cannot open shared object file: No such file or directory")
