"""Speed references and the data they run on: a FACIL-style training loop and a CIFAR-100-shaped data writer.

Run from the repository root: ``python -m benchmarks.fake_cifar100 DIR`` and
``python -m benchmarks.facil_style_loop DIR``; ``python -m cil.bench`` is timed against them.
"""
