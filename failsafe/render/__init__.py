"""How results look to people and scripts, one module per shape.

`seed` is the design document's PascalCase JSON (the terminal, the terminal API endpoint and
every command's --json); `text` is the commands' human text, built from the same result
objects. The API renders through its serializers, the admin through its templates.
"""
