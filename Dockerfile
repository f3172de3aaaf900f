# The one backbone image: `backbone serve` runs the function named by
# FUNCTION_TARGET (one Cloud Run service per function, SPEC §1). The binary
# is static (no cgo), so it runs on distroless/static as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/backbone ./cmd/backbone

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/backbone /backbone
USER nonroot:nonroot
ENTRYPOINT ["/backbone","serve"]
