"""Developer tools outside the shipped packages: simulators and the decision dump."""
