"""The adapter's math: the RepAdapter module and the folding of an affine map into a projection."""
