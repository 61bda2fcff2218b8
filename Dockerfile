# The rgrid image: bootstrap, coordinator and node in one (choose with the command).
# BASE is the official Node.js image on the internet; where no registry is
# reachable, test/images/build-node-base.sh makes a stand-in from local files.
#   docker build -t rgrid:local .                                   # node:24-slim
#   docker build --build-arg BASE=rgrid-test/node:24 -t rgrid:local .
# The build stage uses node_modules and dist from the context when they are
# there (built on the host, e.g. offline), and installs and compiles when not.
ARG BASE=node:24-slim

FROM ${BASE} AS build
WORKDIR /src
COPY . .
RUN if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi \
 && if [ ! -f dist/coordinator/cli.js ]; then npm run build; fi \
 && npm prune --omit=dev --no-audit --no-fund \
 && mkdir -p /app \
 && cp -r package.json node_modules /app/ \
 && mkdir -p /app/dist \
 && cp -r dist/protocol dist/common dist/coordinator dist/node dist/bootstrap dist/cli /app/dist/

FROM ${BASE}
WORKDIR /app
COPY --from=build /app /app
ENV NODE_ENV=production
# State (identities, databases, work dirs) lives in /data, hand-off files between
# services in /mesh; both belong to the unprivileged user the programs run as.
RUN mkdir -p /data /mesh && chown 1000:1000 /data /mesh
USER 1000:1000
VOLUME ["/data"]
ENTRYPOINT ["node"]
CMD ["dist/cli/rgrid.js", "--help"]
