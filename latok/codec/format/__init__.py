"""The ``.latok`` file: header schema, writer, reader, and the value and mask coders behind one interface."""
