"""The pipeline definition: one factory that wires the components."""
