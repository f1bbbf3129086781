"""Wire formats: the Open Inference Protocol (KServe v2) and the vision predict endpoint."""
