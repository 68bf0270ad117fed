"""The graph engine: a model traced with ``torch.fx`` (:mod:`.trace`), run by :class:`.engine.GraphEngine`."""
