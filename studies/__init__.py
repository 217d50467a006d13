"""The studies: one module per experiment (``dlnmc list`` names them), shipped inside the
installed package as ``dlnmc.studies``; ``dlnmc run <name>`` loads one by its file."""
