// Package deploy holds no code: its tests check the files that build,
// package and install nestmtx (the Makefile's release and install targets,
// scripts/release.sh, the Dockerfile and .dockerignore, deploy/compose.yaml,
// deploy/nestmtx.service and deploy/nestmtx.env.example) against the daemon's
// settings and the tools that read them: debug/elf, systemd-analyze, make,
// and the Dockerfile linter dockerfile-utils.
package deploy
