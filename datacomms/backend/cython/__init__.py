"""The compiled backend: Cython modules over the C headers in csrc/."""
