# sparc-ray image for KubeRay (RayCluster / RayJob / RayService in kuberay/):
# Ray 2.60.0 on Python 3.11 plus this package and its jobs/ and tune/ files.
#   docker build -t sparc-ray:2.60.0-py311 .
# The Ray version must match `rayVersion` in kuberay/*.yaml and ray==2.60.* in
# pyproject.toml (tests/manifests/ checks both).
FROM rayproject/ray:2.60.0-py311

# The base image's user is `ray`: uid 1000, primary group `users` (gid 100),
# HOME=/home/ray, with a user-owned Python in /home/ray/anaconda3. Stay non-root; the
# numeric form lets Kubernetes verify runAsNonRoot.
USER 1000:100

# Ray Serve's fast path (HAProxy ingress, throughput-optimized replicas) for every Ray
# process of the image: the values of serve.env (tests/manifests/test_serve_env.py keeps them
# equal; the KubeRay manifests set them on every Ray container as well).
ENV RAY_SERVE_ENABLE_HA_PROXY=1
ENV RAY_SERVE_THROUGHPUT_OPTIMIZED=1
ENV RAY_SERVE_HAPROXY_RETRY_ON="conn-failure empty-response junk-response 502"

# Install the locked versions, each checked against its sha256 (requirements.lock, written
# by .ci/lock.py for CPython 3.11 on Linux x86_64), then the package itself (non-editable).
WORKDIR /home/ray/sparc-ray
COPY --chown=1000:100 . .
RUN pip install --no-cache-dir --require-hashes -r requirements.lock \
    && pip install --no-cache-dir --no-deps . \
    && python -c "import ray, sparc_ray; assert ray.__version__ == '2.60.0', ray.__version__"

# KubeRay runs `ray start` in the WORKDIR, so Ray workers (job entrypoints, Serve
# replicas) run in /home/ray: there `python jobs/train.py --config tune/default.yaml`
# resolves through these links, and serve_config.yaml's relative `model_store` is
# /home/ray/model_store, where the manifests mount the shared PVC.
WORKDIR /home/ray
RUN ln -s /home/ray/sparc-ray/jobs /home/ray/jobs \
    && ln -s /home/ray/sparc-ray/tune /home/ray/tune \
    && mkdir -p /home/ray/model_store
