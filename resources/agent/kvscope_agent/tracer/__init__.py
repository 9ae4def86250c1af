"""Transfer tracing: the CUPTI injection library (C), its build, and the collector of its records."""
