# A custom SDK container for Dataflow (--sdk_container_image) or Flink's DOCKER environment:
# Beam's own Python 3.11 image of our Beam version, plus this package with TensorFlow for Perch.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/soundscape-beam:0.1.0 .
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/soundscape-beam
COPY setup.py README.md ./
COPY pipeline/ pipeline/
COPY transforms/ transforms/
RUN pip install --no-cache-dir '.[perch]'
# For Perch on GPU workers, install tensorflow[and-cuda]==2.21.0 instead of tensorflow-cpu
# and run with --dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver.
