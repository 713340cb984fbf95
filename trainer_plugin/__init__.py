"""The mixed-precision distributed trainer and the plugin connecting any PyTorch loop to gputuned."""
