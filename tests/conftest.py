"""Suite-wide collection settings."""

# BVLC Caffe's own pycaffe tests run in a pytest process of their own (tests/test_bvlc_pycaffe.py),
# where `import caffe` resolves to brewnet; they are not collected into this session.
collect_ignore = ["bvlc_caffe"]
