"""Config presets shipped with the package: ``Settings.load("default")``, ``--config openai``.

Each ``NAME.yaml`` here is a preset; a preset other than ``default`` sets only what differs from
the built-in defaults. List them with :func:`mmrag_li.config.preset_names`; copy one to start your
own file (``mmrag_li.config_sources.locate_config("default")[0].read_text()``).
"""
