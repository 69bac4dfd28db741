# baton relay image (docs/docker.md).  One image for every stage; docker-compose.yml picks the binary.
#   docker build -t baton .
# Build stage: the Makefile's -dev packages (RUN_PKGS), then make.
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libevent-dev libzmq3-dev librocksdb-dev libssl-dev libcbor-dev \
      libsecp256k1-dev libwslay-dev libhttp-parser-dev libcurl4-openssl-dev libjansson-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the build context: pass the version (docker build --build-arg BATON_VERSION=$(git describe))
ARG BATON_VERSION=unknown
RUN make -j"$(nproc)" BUILD=build BT_VERSION="$BATON_VERSION" \
      build/baton build/baton-ingest build/baton-verify build/baton-store build/baton-fanout build/batonctl

# Runtime stage: the shared libraries those -dev packages link against, curl for the healthcheck.
FROM debian:12
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-openssl-2.1-7 libevent-pthreads-2.1-7 libzmq5 librocksdb7.8 libssl3 \
      libcbor0.8 libsecp256k1-1 libwslay1 libhttp-parser2.9 libcurl4 libjansson4 \
      ca-certificates curl procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 2470 --home-dir /data --shell /usr/sbin/nologin baton \
 && mkdir -p /data && chown baton:baton /data
COPY --from=build /src/build/baton /src/build/baton-ingest /src/build/baton-verify /src/build/baton-store /src/build/baton-fanout /src/build/batonctl /opt/baton/bin/
ENV PATH=/opt/baton/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RELAY_DATA_DIR=/data
USER baton
WORKDIR /data
VOLUME /data
EXPOSE 2470
CMD ["/opt/baton/bin/baton"]
