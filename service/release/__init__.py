"""The release: request, typed stage state, stages, gate, and the in-process demo. Imports
pipeline/ and tracking/, never dist/. (Empty on purpose: import the modules themselves.)"""
