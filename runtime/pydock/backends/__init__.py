"""Container backends behind one small protocol (base.py): native (built in), later docker."""
