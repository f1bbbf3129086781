"""Live streams: sources read off the event loop, inference through the model's batcher, tracking, zones and rules."""
