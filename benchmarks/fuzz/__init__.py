"""spc's differential fuzzer (issue 10, item 3); ``python benchmarks/fuzz.py --help``.

``gen``: random cases (a program, formats, schedule, shapes, data and operand
families), plain JSON so that a failure is its own reproducer.  ``reference``:
the float64 numpy meaning of a case.  ``execute``: one case through spc, classified.
``pool``: cases in worker processes (crashes and hangs are attributed).
``minimize``: shrink a failing case.  ``cuda``: render + nvcc, and runs on a GPU.
"""
