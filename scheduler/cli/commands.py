"""The list of top-level commands. Each module adds its own; keep imports light."""


def all_commands():
    commands = []
    return commands
