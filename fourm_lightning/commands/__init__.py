"""Non-Lightning sub-commands of ``fourm-lightning`` (data, quickstart), as typed functions.

jsonargparse builds each command's parser from the function signature and docstring.
"""
