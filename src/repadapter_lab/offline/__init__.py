"""The offline transfer suite (``suite.py``): natural, specialized and structured task builders."""
