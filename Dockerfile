# Postern's container image: the gateway alone, its state in the /data volume.
# Build:  docker build -t postern .
# Run:    docker run -d --name postern -p 8080:8080 -p 2525:2525 -v postern-data:/data postern
# README.md, "Running in a container"; docs/decisions/025-container-image.md for the choices.

# ---- build: all dependencies, the TypeScript compiled, then the development dependencies removed ----
FROM node:24-bookworm-slim AS build
# better-sqlite3 compiles from source where its prebuilt binary cannot be downloaded: a C++ tool chain,
# and Node's own headers (in /usr/local/include/node) instead of a download from nodejs.org.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev \
 && rm -rf node_modules/better-sqlite3/deps node_modules/better-sqlite3/src node_modules/better-sqlite3/build/Release/obj* \
 && npm cache clean --force

# ---- runtime: Node, the compiled gateway and its production dependencies; no compiler, no npm run ----
FROM node:24-bookworm-slim
LABEL org.opencontainers.image.title="Postern" \
      org.opencontainers.image.description="Self-hosted OAuth 2.0 mail gateway: devices send plain SMTP, Postern delivers with XOAUTH2." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production \
    POSTERN_DATA_DIR=/data \
    POSTERN_HOST=0.0.0.0 \
    POSTERN_HTTP_PORT=8080 \
    POSTERN_SMTP_PORT=2525
WORKDIR /app
# Owned by root and read-only to the gateway: only /data is its to write.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# A named volume starts as a copy of this directory, owned by the node user (uid 1000).
RUN mkdir -p /data && chown node:node /data && chmod 0700 /data
VOLUME ["/data"]
USER node
# Remote UI (HTTP) and the relay for devices; POSTERN_HTTPS_PORT, when set, is a third.
EXPOSE 8080 2525
# /readyz answers 200 only while the store answers and every listener is up (503 while starting or stopping).
# Node itself asks it (the slim image has no curl), with node:http rather than fetch: the check runs inside
# the container's memory limit, and fetch would load undici for it (about 22 MB against 9 MB).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const h=process.env.POSTERN_HOST;const host=!h||h==='0.0.0.0'||h==='::'?'127.0.0.1':h;require('node:http').get({host,port:Number(process.env.POSTERN_HTTP_PORT||8080),path:'/readyz',timeout:4000},(r)=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1)).on('timeout',()=>process.exit(1))"]
# main.js stops the relay, the queue and the Remote UI on SIGTERM, well within docker stop's 10 seconds.
STOPSIGNAL SIGTERM
# Node directly, as PID 1 (not through npm): the flags of `npm start`.
CMD ["node", "--max-semi-space-size=2", "--expose-gc", "dist/main.js"]
