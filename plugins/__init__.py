"""Built-in plugins, installed as the import package ``mesh_plugins`` (the folder keeps its name)."""
