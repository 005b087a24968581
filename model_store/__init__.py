"""The model store: exported entries plus the typed manifest contract (``model_store.manifest``)."""
