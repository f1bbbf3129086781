"""The model repository: discovery, `model.yaml`, versions, and the handles that serve them."""
