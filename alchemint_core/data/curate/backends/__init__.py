"""Model backends of the curation pipeline: each turns a frame and a tag into boxes, scores a box against a tag and
tracks a box into a mask track (see ..stages.Backend)."""
