"""From an image back to the seeds of a deterministic DDIM generator (Asperti et al.): the
generator, inversion, gradient descent (`ddim`) and embedding networks (`networks`)."""
