"""The map page: its HTML, scripts and styles, and MapLibre GL JS from npm (node_modules)."""
