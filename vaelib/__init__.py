"""The project's library: the machinery the scripts share (training engine,
fused derivatives, checkpoints, runs and their files, command-line helpers,
estimators, models). It never imports a top-level script; what it needs of
vae.py's contract functions is passed in. Importing the package loads no
NumPy (bench.py sets the thread count first)."""
