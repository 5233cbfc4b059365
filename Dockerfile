# time-server in a container: built with the official Deno image, run as a non-root user.
# DENO_VERSION must equal .dvmrc (deploy_test.ts checks it).
ARG DENO_VERSION=2.9.6

FROM denoland/deno:${DENO_VERSION} AS build
WORKDIR /src
# The modules and the compile tool (the tests come along; the binary only takes what main.ts reaches).
COPY deno.json deno.lock main.ts protocol.ts ./
COPY server/ server/
COPY cli/ cli/
COPY client/ client/
COPY lib/ lib/
COPY time/ time/
COPY nts/ nts/
COPY config/ config/
COPY roughtime/ roughtime/
COPY tools/ tools/
RUN deno task compile

# The compiled binary needs glibc and libgcc only.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/dist/time-server /usr/local/bin/time-server
USER nonroot
EXPOSE 45000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/time-server", "client", "--host", "127.0.0.1", "--timeout", "3"]
ENTRYPOINT ["/usr/local/bin/time-server"]
CMD ["--log-format", "json"]
