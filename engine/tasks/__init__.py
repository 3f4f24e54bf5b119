"""Science tasks on the frozen encoder: properties, morphology, segmentation, super-resolution."""
