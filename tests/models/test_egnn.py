from geognn.testing import ModelTestMixin


class TestEGNN(ModelTestMixin):
    model_name = "egnn"
    model_kwargs = {"hidden_channels": 16, "num_layers": 3, "num_radial": 6}


class TestEGNNWithVectorsAndAttention(ModelTestMixin):
    """The vector channel, attention and the un-normalised coordinate update."""

    model_name = "egnn"
    model_kwargs = {
        "hidden_channels": 16,
        "num_layers": 3,
        "vector_channels": 4,
        "attention": True,
        "normalize_coords": False,
        "envelope": "cosine",
        "radial_basis": "gaussian",
    }
