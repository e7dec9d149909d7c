"""What `orchestrator init` and `orchestrator new` write: the templates of a project and of a
module, the edit that adds a module to `modules.yaml`, and an all-or-nothing way to write files.

Templates are Python strings, not data files, so that every install (wheel, editable, `--target`)
carries them without package-data rules.
"""
