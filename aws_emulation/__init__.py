"""The parts of AWS the local stack emulates because moto does not run code: see README.md."""
