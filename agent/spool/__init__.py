"""The spool: noticing recordings and deciding when one is finished."""
