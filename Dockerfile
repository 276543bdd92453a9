# mongokeep in a container: a release build on Debian, run as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mongokeep

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 mongokeep
COPY --from=build /src/target/release/mongokeep /usr/local/bin/mongokeep
USER mongokeep
ENTRYPOINT ["mongokeep"]
