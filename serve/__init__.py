"""Ray Serve application: the evaluator and the tuned models of a finished run."""
