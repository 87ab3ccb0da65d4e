"""DeepLab networks: Caffe files read by hand, Caffe layer semantics, the forward pass, the CLI."""
