"""What every HTTP route shares: middleware, exception handlers and response classes."""
