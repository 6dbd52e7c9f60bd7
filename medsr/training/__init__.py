"""Training of SR networks from volumes degraded on the fly: config, data and the loop."""
