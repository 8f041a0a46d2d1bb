"""Calibration: camera intrinsics, the conveyor plane (pixels -> mm), hand-eye, measurements.

camera_file (YAML of intrinsics), board (targets and detection), render (boards through the
virtual camera), camera, plane, poses, handeye, handeye_sim, measure_config, measure,
tolerances, plane_report, storage, cli (`cellinspect calibrate ...`).
"""
